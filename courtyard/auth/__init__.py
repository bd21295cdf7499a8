"""Who may do what: scopes, roles, tokens and (later) authenticators."""
