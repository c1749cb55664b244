"""Calls that outlive their request: writes recorded before and after they run, calls that wait
for a human, the decisions (CLI or Slack), the timers, and the kill switch."""
