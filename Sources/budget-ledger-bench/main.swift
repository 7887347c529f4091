// budget-ledger-bench: figures for the real Ledger API on this machine, beside the raw C
// reference (/work/shared/reference). `budget-ledger-bench --help` lists the options.
import Foundation

exit(BenchmarkCommand.main(Array(CommandLine.arguments.dropFirst())))
