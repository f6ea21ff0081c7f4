// How a rank outlives the launcher's teardown long enough to report a communication failure.
//
// A launcher that lost a node (or saw one rank abort) ends the job's other processes: SIGTERM,
// then SIGKILL a second later (Open MPI's orted; Slurm's --kill-on-bad-exit alike). Two things
// follow for a rank that is inside a collective:
//  * the stop signal itself is news: the process's signal handler calls noteStopSignal()
//    (async-signal-safe), and a wait that sees stopSignalCount() change probes its peers at
//    once (peer_probe.h) instead of waiting out the deadline;
//  * once a rank has a communication failure that it will report and exit 3 for, it calls
//    shieldFromTeardown(): stop signals are ignored from then on, so that a SIGTERM sent because
//    another rank aborted a few ms earlier neither kills it nor makes it exit 75 as if preempted
//    before it has named the collective and the unreachable ranks.
#pragma once

namespace tessera::comm {

void noteStopSignal();
int stopSignalCount();

// Ignores SIGTERM, SIGINT, SIGHUP, SIGUSR1 and SIGUSR2 for the rest of the process's life.
void shieldFromTeardown();
// True once shieldFromTeardown() ran (signal handlers must not be restored after it).
bool teardownShielded();

}  // namespace tessera::comm
