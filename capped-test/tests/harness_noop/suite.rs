// 2000 no-op tests, `m00::d0::t0` … `m19::d9::t9`, made with the test attribute given:
// `two_thousand!(#[capped_test::capped])` or `two_thousand!(#[test])`. Included by the
// `harness_noop` target (capped harness) and `harness_noop_libtest` (libtest), whose runs
// `harness_bench.rs` compares to measure the harness's per-test overhead.

macro_rules! ten {
    (#[$attr:meta]) => {
        #[$attr]
        fn t0() {}
        #[$attr]
        fn t1() {}
        #[$attr]
        fn t2() {}
        #[$attr]
        fn t3() {}
        #[$attr]
        fn t4() {}
        #[$attr]
        fn t5() {}
        #[$attr]
        fn t6() {}
        #[$attr]
        fn t7() {}
        #[$attr]
        fn t8() {}
        #[$attr]
        fn t9() {}
    };
}

macro_rules! hundred {
    (#[$attr:meta]) => {
        mod d0 { ten!(#[$attr]); }
        mod d1 { ten!(#[$attr]); }
        mod d2 { ten!(#[$attr]); }
        mod d3 { ten!(#[$attr]); }
        mod d4 { ten!(#[$attr]); }
        mod d5 { ten!(#[$attr]); }
        mod d6 { ten!(#[$attr]); }
        mod d7 { ten!(#[$attr]); }
        mod d8 { ten!(#[$attr]); }
        mod d9 { ten!(#[$attr]); }
    };
}

macro_rules! two_thousand {
    (#[$attr:meta]) => {
        mod m00 { hundred!(#[$attr]); }
        mod m01 { hundred!(#[$attr]); }
        mod m02 { hundred!(#[$attr]); }
        mod m03 { hundred!(#[$attr]); }
        mod m04 { hundred!(#[$attr]); }
        mod m05 { hundred!(#[$attr]); }
        mod m06 { hundred!(#[$attr]); }
        mod m07 { hundred!(#[$attr]); }
        mod m08 { hundred!(#[$attr]); }
        mod m09 { hundred!(#[$attr]); }
        mod m10 { hundred!(#[$attr]); }
        mod m11 { hundred!(#[$attr]); }
        mod m12 { hundred!(#[$attr]); }
        mod m13 { hundred!(#[$attr]); }
        mod m14 { hundred!(#[$attr]); }
        mod m15 { hundred!(#[$attr]); }
        mod m16 { hundred!(#[$attr]); }
        mod m17 { hundred!(#[$attr]); }
        mod m18 { hundred!(#[$attr]); }
        mod m19 { hundred!(#[$attr]); }
    };
}
