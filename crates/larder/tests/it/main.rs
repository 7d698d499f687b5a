//! Integration tests of the `larder` SDK (one test binary, one module per area).

mod materialize;
