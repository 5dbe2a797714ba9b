use capped_test::capped;

#[capped]
fn takes_a_parameter(size: usize) {
    let _ = size;
}

fn main() {}
