#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sealed_fuzz::kms_cms(data));
