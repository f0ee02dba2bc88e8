//! The JSON-RPC envelope parser on one line of text.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Lines reach the parser as UTF-8 (the codec reports anything else): use the valid
    // prefix so that no input is wasted.
    let text = match std::str::from_utf8(data) {
        Ok(text) => text,
        Err(e) => std::str::from_utf8(&data[..e.valid_up_to()]).expect("valid prefix"),
    };
    authbridge::fuzzing::envelope(text);
});
