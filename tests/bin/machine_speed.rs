//! `machine-speed`: measures how fast this machine runs the model (one short
//! decode at one thread), keeps it for the model tests' waits and prints it.
//! `scripts/test` runs it before the suite, so a failure on a slow machine
//! comes with the machine's speed in the same log.

use seedling_tests::machine::{MachineSpeed, speed_file};

fn main() {
    let speed = MachineSpeed::measure();
    eprintln!(
        "test machine: {speed}; the model tests' waits derive from it ({})",
        speed_file().display()
    );
}
