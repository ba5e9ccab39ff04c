"""The SKU catalog: what GPU shapes the operator sells, and at what hourly price."""
