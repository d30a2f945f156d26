-- The bundled rare-earths dataset: sourced facts on the rare-earth supply chain.
-- Every table keeps its `source` and `as_of` columns; SOURCES.md lists the sources.

CREATE TABLE elements (
    symbol TEXT PRIMARY KEY,
    name TEXT NOT NULL DEFAULT '',
    atomic_number INTEGER,
    "group" TEXT,
    group_convention TEXT,
    group_usgs_mcs2026 TEXT,
    key_uses TEXT,
    under_china_export_control_apr2025 TEXT,
    under_china_export_control_oct2025 TEXT,
    china_control_notes TEXT,
    notes TEXT,
    source TEXT,
    as_of INTEGER
);

-- One country, one year, one USGS MCS edition; id = country-year-edition.
CREATE TABLE country_production (
    id TEXT PRIMARY KEY,
    country TEXT,
    year INTEGER,
    mine_production_t_reo INTEGER,
    reserves_t_reo INTEGER,
    reserves_qualifier TEXT,
    estimated TEXT,
    edition TEXT,
    notes TEXT,
    source TEXT,
    as_of INTEGER
);

CREATE TABLE facilities (
    id TEXT PRIMARY KEY,
    name TEXT,
    operator TEXT,
    country TEXT,
    stage TEXT,
    status TEXT,
    capacity_t_per_year INTEGER,
    capacity_basis TEXT,
    notes TEXT,
    source TEXT,
    as_of INTEGER
);

CREATE TABLE trade_policies (
    id TEXT PRIMARY KEY,
    date TEXT,
    jurisdiction TEXT,
    measure TEXT,
    elements_affected TEXT,
    summary TEXT,
    source TEXT,
    as_of INTEGER
);

-- One importer, commodity and supplier share; id = importer--commodity--supplier--year--metric.
CREATE TABLE dependencies (
    id TEXT PRIMARY KEY,
    importer TEXT,
    commodity TEXT,
    supplier TEXT,
    share_percent REAL,
    share_qualifier TEXT,
    year INTEGER,
    period TEXT,
    metric TEXT,
    notes TEXT,
    source TEXT,
    as_of INTEGER
);
