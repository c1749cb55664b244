"""Limits that keep agents from hammering tools or burning money: rate limiters, the upstream's
own back-off, circuit breakers, budgets and loop detection."""
