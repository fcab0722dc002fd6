//! `cargo fuzz run dynamo_items`: see [`vipfleet_fuzz::dynamo_items`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| vipfleet_fuzz::dynamo_items(data));
