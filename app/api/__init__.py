"""HTTP routers: parse, authorize, call a service. No SQL or upstream calls here."""
