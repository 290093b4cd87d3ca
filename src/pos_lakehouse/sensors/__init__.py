"""Every sensor of the code location, one module per kind.

- `landing`: `retailer_landing_sensor`, new or changed files in the retailers' landing folders become ingest runs;
- `polling`: `every_<N>s_poll_sensor`, pulled retailers' sources (API, database) asked for news;
- `catch_up`: `catch_up_sensor`, silver or gold tables behind their upstream after a killed or failed run;
- `reference`: `corporate_reference_landing_sensor` (reference files landed) and `reference_refresh_sensor`
  (a retailer's silver re-enriched when reference data lands after it);
- `pool_claims`: `pool_claims_sensor`, free pool slots handed to steps left waiting;
- `targets`: what a retailer's runs select (its assets, in the code location's asset job) and the tags naming it;
- `code_location`: `serving_automation` and the assembly of all of the above for the definitions;
- `running`: how each is declared (RUNNING by default, its interval from `settings.sensor_interval`).
"""
