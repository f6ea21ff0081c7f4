// Where each rank on this node stands in one communicator's sequence of collectives, kept in
// shared memory so that a rank whose collective timed out can name the peers it waited for,
// without any further communication (a frozen or dead peer answers nothing).
//
// Writers use relaxed atomic stores on their own slot (no system calls, no MPI); readers look at
// other slots only when composing a timeout report. Ranks on other nodes have no slot: a report
// says that their state is not known.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

namespace tessera::comm {

class PeerBoard {
 public:
  struct Slot;  // one cache line per rank (defined in the .cpp)

  struct PeerState {
    std::int64_t launched = 0;   // collectives this rank has entered on the communicator
    std::int64_t completed = 0;  // ... and seen complete
    std::int64_t step = -1;      // step label of the last one entered
    double idle_seconds = 0;     // since the rank last polled MPI (entered, tested or waited)
  };

  // Creates the shared segment `name` (a POSIX shm name, "/..."), sized for `slots` ranks.
  // Throws Error when it cannot; the caller then runs without a board.
  static std::unique_ptr<PeerBoard> create(const std::string& name, int slots);
  // Maps a segment another process created.
  static std::unique_ptr<PeerBoard> open(const std::string& name, int slots);

  ~PeerBoard();
  PeerBoard(const PeerBoard&) = delete;
  PeerBoard& operator=(const PeerBoard&) = delete;

  // Removes the name; mappings stay valid. Called once every rank has opened the segment, so
  // that nothing is left in /dev/shm even if the job is killed.
  void unlinkName();

  int slots() const { return slots_; }
  void entered(int slot, std::int64_t seq, std::int64_t step);
  void completed(int slot, std::int64_t seq);
  void heartbeat(int slot);
  PeerState read(int slot) const;

 private:
  PeerBoard(std::string name, void* memory, std::size_t bytes, int slots);

  std::string name_;
  void* memory_;
  std::size_t bytes_;
  int slots_;
};

}  // namespace tessera::comm
