"""Prints a `.env` for docker-compose.yml with freshly generated secrets: `python3 deploy/new_env.py > .env`.

Standard library only, so it runs before anything is installed. The same values fit the Kubernetes Secret
(deploy/k8s/secret.yaml): keep them in your secret store, never in the repository.
"""

import base64
import secrets


def new_env() -> dict[str, str]:
    return {
        # Hex, so it goes into DATABASE_URL without escaping.
        "POSTGRES_PASSWORD": secrets.token_hex(24),
        "JWT_SECRET": secrets.token_urlsafe(48),
        # KEY_ID:BASE64(32 bytes); to rotate, put a new key first and keep this one after it.
        "ENCRYPTION_KEYS": "k1:" + base64.b64encode(secrets.token_bytes(32)).decode(),
        "API_KEY_HASH_KEY": base64.b64encode(secrets.token_bytes(32)).decode(),
    }


if __name__ == "__main__":
    print("\n".join(f"{name}={value}" for name, value in new_env().items()))
