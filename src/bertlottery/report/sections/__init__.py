"""The report's own sections, one module per group: `run` (status, costs, config, environment),
`subnetworks` (the lottery study's results), `masks` (stability, importance, overlaps). Each
section is a function of a `bertlottery.report.context.Context` returning a `Section`; the page
order is `bertlottery.report.build.builtin_sections`."""
