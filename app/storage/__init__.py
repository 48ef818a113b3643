"""One object store (a local folder or an S3-compatible bucket) for every domain that keeps
files: put, get, delete, sign, staging and content types. The domains above it (media,
uploads) keep only their key shapes and their rules."""
