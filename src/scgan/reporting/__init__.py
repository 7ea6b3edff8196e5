"""Pictures and reports from arrays: heat-map overlays, the test report (report.md, report.html)."""
