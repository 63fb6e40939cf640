-- Published values are now rounded by one rule, the one q compares with (PostgreSQL's
-- round(x::numeric, n) of the real: half away from zero on its 6-digit decimal; see
-- ngsi.mapping.published_round). Renderings made before used Python's half-even rounding
-- and differ on 0.05 dB ties from what is now rendered live, so they are dropped: the last
-- ngsi.day_documents_lookback_days days are rendered again by the API's next pass, older
-- days are answered live (as stale ones are) until they age out.
DELETE FROM ngsi_temporal_days;
