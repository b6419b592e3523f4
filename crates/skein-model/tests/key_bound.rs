//! The key interner is bounded: past `MAX_INTERNED_KEYS` distinct keys, new keys are owned by
//! their attribute and still behave as their text. Its own test binary, because the interner
//! is process-wide and this fills it.

use skein_model::{Key, KeyValue, MAX_INTERNED_KEYS};

#[test]
fn keys_past_the_bound_are_owned_and_still_compare_as_text() {
    let early = Key::new("http.route");
    assert!(early.interned_addr().is_some());
    let keys: Vec<Key> = (0..MAX_INTERNED_KEYS + 100)
        .map(|i| Key::new(&format!("k{i}")))
        .collect();
    let owned = keys.iter().filter(|k| k.interned_addr().is_none()).count();
    assert!(owned >= 100, "at most MAX_INTERNED_KEYS are interned ({owned} owned)");
    let late = keys.last().unwrap();
    assert!(late.interned_addr().is_none());
    assert!(late.heap_size() > 0);
    assert_eq!(late, &Key::new(&format!("k{}", MAX_INTERNED_KEYS + 99)));
    assert_eq!(*late, *format!("k{}", MAX_INTERNED_KEYS + 99));
    // Keys interned before the bound was reached stay shared.
    let again = Key::new("http.route");
    assert_eq!(again.interned_addr(), early.interned_addr());
    assert_eq!(KeyValue::string("http.route", "/a").key, early);
}
