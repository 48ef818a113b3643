"""seedance-bff: the backend-for-frontend of the Seedance v2 video API."""
