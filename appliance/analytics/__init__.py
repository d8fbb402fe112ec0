"""Analytics computed from stored data: performance KPIs (appliance.analytics.kpis)."""
