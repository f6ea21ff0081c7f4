// Tessera's exception hierarchy and process exit codes.
//
// Library code throws; only the command-line front end (trainer/main.cpp) turns an exception
// into one log line and an exit code. Each foreign status code has one check helper next to the
// code that wraps that library (checkMpi in comm/, checkHdf5 in data/, checkNccl in comm/).
#pragma once

#include <stdexcept>
#include <string>

namespace tessera {

// Documented in README.md ("Exit codes"); the Slurm script relies on kExitPreempted.
enum ExitCode : int {
  kExitOk = 0,
  kExitFailure = 1,      // runtime failure (I/O error during training, internal error)
  kExitUsage = 2,        // bad command line, config, dataset or checkpoint given by the user
  kExitComm = 3,         // a collective timed out, a peer died, ranks disagree
  kExitUnavailable = 4,  // feature not built in or not implemented yet
  kExitDiverged = 5,     // non-finite losses persisted after rollback
  kExitPreempted = 75,   // stopped on a signal or time budget after saving; requeue me
};

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
  virtual int exitCode() const { return kExitFailure; }
};

// The user asked for something malformed: command line, config key/value, input file.
class UsageError : public Error {
 public:
  using Error::Error;
  int exitCode() const override { return kExitUsage; }
};
class ConfigError : public UsageError {
 public:
  using UsageError::UsageError;
};
class InputError : public UsageError {
 public:
  using UsageError::UsageError;
};

// Collectives: a timeout, a lost peer or a disagreement between ranks.
class CommError : public Error {
 public:
  using Error::Error;
  int exitCode() const override { return kExitComm; }
};

class NotAvailable : public Error {
 public:
  using Error::Error;
  int exitCode() const override { return kExitUnavailable; }
};

class Diverged : public Error {
 public:
  using Error::Error;
  int exitCode() const override { return kExitDiverged; }
};

// Thrown (never caught inside the trainer) once a preempted run has saved its checkpoint.
class Preempted : public Error {
 public:
  using Error::Error;
  int exitCode() const override { return kExitPreempted; }
};

// An error that every rank of a job throws together, after agreeing on it (see
// trainer/agreement.h): the exit code and message of the rank that met it first. Because no rank
// is left inside a collective, the command-line front end ends normally instead of aborting the
// job.
class AgreedError : public Error {
 public:
  AgreedError(int exit_code, const std::string& what) : Error(what), exit_code_(exit_code) {}
  int exitCode() const override { return exit_code_; }

 private:
  int exit_code_;
};

// Exit code for any exception escaping to main().
int exitCodeFor(const std::exception& e);

}  // namespace tessera
