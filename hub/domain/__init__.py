"""The pure core: case lifecycle, claims and routing. No I/O, no clocks, no asyncio."""
