use capped_test::capped;

#[capped]
fn returns_a_number() -> i32 {
    7
}

fn main() {}
