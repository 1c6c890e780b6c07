"""OneWindow partner SDK."""
