"""The hub's HTTP application: the REST API now, browser pages later."""
