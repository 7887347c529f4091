import ArgumentParser
import BudgetLedger
import BudgetLedgerWire

extension BudgetLedgerCommand {
    struct Release: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "End a hold with nothing spent (exit 4 unknown, 5 no longer live).")

        @OptionGroup var options: LedgerOptions

        @Argument(help: "The reservation id.")
        var reservation: Int64

        func run() throws {
            try options.withAnyLedger { ledger in
                let budget = try ledger.release(reservation)
                Output.emit(
                    WriteAnswer.released(reservation, budget: budget),
                    text: "released reservation \(reservation): " + Output.text(budget), asJSON: options.json)
            }
        }
    }
}
