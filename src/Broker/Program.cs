using Broker;
using Broker.Cli;
using Broker.Configuration;
using Broker.Store.Sqlite;

// Thin entry point: a sub-command, or build and run the broker.
if (args.Length > 0 && args[0] == "hash-password")
{
    return HashPasswordCommand.Run(Console.In, Console.Out, Console.Error);
}

try
{
    await using var app = BrokerApp.Create(args);
    await app.RunAsync();
    return 0;
}
catch (BrokerConfigurationException ex)
{
    // A bad setting stops the start with the key at fault, before any port is opened.
    await Console.Error.WriteLineAsync($"Invalid configuration:{Environment.NewLine}  {string.Join(Environment.NewLine + "  ", ex.Errors)}");
    return 2;
}
catch (StoreUnavailableException ex)
{
    // The data file is unreadable: say which and how to recover, and touch nothing.
    await Console.Error.WriteLineAsync(ex.Message);
    return 3;
}
