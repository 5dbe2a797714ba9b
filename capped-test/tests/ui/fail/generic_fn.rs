use capped_test::capped;

#[capped]
fn generic<T: Default>() {
    let _ = T::default();
}

#[capped]
fn with_lifetime<'a>() {}

fn main() {}
