// SPDX-License-Identifier: Apache-2.0
//
// Forced into every Verilated translation unit (-include) together with -DVL_PRINTF=rnic_vl_printf:
// the RTL's $display/$error/$fatal text goes to Rust's print! (captured per test by the Rust test
// harness) and the last lines are kept for the error message of a $fatal.

#pragma once

void rnic_vl_printf(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
