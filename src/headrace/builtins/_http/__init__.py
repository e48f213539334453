"""HTTP plugins: sources, steps and sinks on aiohttp."""
