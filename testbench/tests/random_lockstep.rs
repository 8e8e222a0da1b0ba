// stub (being written)
#[test]
fn stub() {}
