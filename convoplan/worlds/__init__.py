"""Built-in worlds: complete domains (knowledge, providers, simulated people) to run and learn on."""
