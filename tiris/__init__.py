"""Wiring of the service: configuration, the application factory, authentication and error mapping."""
