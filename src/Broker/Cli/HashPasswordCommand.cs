using Broker.Ims.Identity;

namespace Broker.Cli;

/// <summary><c>dotnet run --project src/Broker -- hash-password</c>: reads a password from standard input, prints the hash for <c>Broker:Users:N:PasswordHash</c>.</summary>
public static class HashPasswordCommand
{
    public static int Run(TextReader input, TextWriter output, TextWriter error)
    {
        if (!Console.IsInputRedirected)
        {
            error.Write("Password: ");
        }

        var password = input.ReadLine();
        if (string.IsNullOrEmpty(password))
        {
            error.WriteLine("No password on standard input.");
            return 1;
        }

        output.WriteLine(PasswordVerifier.Hash(password));
        return 0;
    }
}
