//! The `auth.json` reader on a file's content.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    authbridge::fuzzing::auth_json(data);
});
