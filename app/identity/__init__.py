"""Who is calling: bearer tokens from identity providers (JWKS, several issuers, claim
mapping), verified with PyJWT."""
