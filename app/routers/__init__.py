"""HTTP routers, one module per API area: parse the request, call the engine, shape the response."""
