"""The NATS door: JetStream consumers of the trading bot's events (asyncapi.yaml), calling the same db/ operations."""
