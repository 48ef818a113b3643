"""The routers, one per resource: parse, authorize, call a domain. No SQL or upstream
calls here."""
