// Local work whose failure on one rank must end every rank at once, with the message.
//
// Setup work is often done on some ranks only (rank 0 creates the run directory, reads the
// checkpoint, opens the preview images) or may fail on some only (a file missing on one node).
// A rank that throws there and exits would leave the others waiting in their next collective
// until comm.timeout. runAgreed() runs the work on every rank, then one all-reduce tells every
// rank whether any failed; if one did, the lowest failing rank's exit code and message are
// broadcast and every rank throws AgreedError with them, so the whole job ends within seconds
// with the real cause and its exit code (an I/O error stays exit 1, a bad file exit 2).
#pragma once

#include <functional>
#include <string>

namespace tessera::comm {
class Communicator;
}

namespace tessera::trainer {

// `work` must not enter a collective (the ranks that did not fail would wait in it). `what`
// names the work in the message ("setup", "resume"). Collective over `control`: every rank calls
// it, in the same order. With one rank the work's own exception propagates unchanged.
void runAgreed(comm::Communicator& control, const std::string& what,
               const std::function<void()>& work);

}  // namespace tessera::trainer
