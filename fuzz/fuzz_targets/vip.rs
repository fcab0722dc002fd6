//! `cargo fuzz run vip`: see [`vipfleet_fuzz::vip`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| vipfleet_fuzz::vip(data));
