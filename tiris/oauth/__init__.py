"""The login providers' protocols: each module turns a login into an authorization URL, and a callback's code into
the Identity the provider vouches for. Nothing here touches the database."""
