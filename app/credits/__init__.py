"""Credits: a double-entry ledger of balances a product grants or sells, with holds that
follow each job (pending at create, posted on success, voided on every other end). See
docs/credits.md."""
