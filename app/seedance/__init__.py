"""The Seedance v2 adapter: the only code that knows upstream request and response shapes."""
