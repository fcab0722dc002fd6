//! `cargo fuzz run agent_config`: see [`vipfleet_fuzz::agent_config`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| vipfleet_fuzz::agent_config(data));
