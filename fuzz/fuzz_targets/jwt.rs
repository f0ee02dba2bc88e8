//! The JWT claims reader on one token.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = match std::str::from_utf8(data) {
        Ok(text) => text,
        Err(e) => std::str::from_utf8(&data[..e.valid_up_to()]).expect("valid prefix"),
    };
    authbridge::fuzzing::jwt(text);
});
