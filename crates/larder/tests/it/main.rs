//! Integration tests of the `larder` SDK on temporary feature repositories.

mod online;
