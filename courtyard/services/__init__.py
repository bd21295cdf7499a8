"""Services: external ones registered through config or the API, and hub-managed processes."""
