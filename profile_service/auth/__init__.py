"""Auth: tokens verified (a secret, a public key or a JWKS) into the caller a call acts for;
tokens minted for operators."""
