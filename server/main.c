/*
 * main.c - the `vitfit` binary: dispatches to a subcommand.
 */
#include <stdio.h>
#include <string.h>

#include "cli.h"

static const struct {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
} commands[] = {
    {"serve", cli_serve, "serve classification and tasks over HTTP"},
    {"classify", cli_classify, "classify images with a model"},
    {"inspect", cli_inspect, "describe a checkpoint or safetensors file"},
    {"train", cli_train, "fine-tune a task (BitFit by default) on a data set"},
    {"eval", cli_eval, "measure a model or task on a data set"},
    {"bench", cli_bench, "time the forward pass"},
    {"init", cli_init, "write a preset-shaped checkpoint with seeded random weights"},
    {"health", cli_health, "ask a running server whether it is alive or ready (for probes)"},
};

static void usage(FILE *out)
{
    fprintf(out, "usage: vitfit COMMAND [OPTIONS]\n\ncommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(out, "  %-10s %s\n", commands[i].name, commands[i].summary);
    fprintf(out, "\n'vitfit COMMAND --help' describes a command's options.\n");
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return CLI_USAGE;
    }
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
        strcmp(argv[1], "help") == 0) {
        usage(stdout);
        return CLI_OK;
    }
    if (strcmp(argv[1], "--version") == 0) {
        printf("vitfit 0.1.0\n");
        return CLI_OK;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (strcmp(argv[1], commands[i].name) == 0)
            return commands[i].run(argc - 1, argv + 1);
    fprintf(stderr, "vitfit: unknown command '%s' (see 'vitfit --help')\n", argv[1]);
    return CLI_USAGE;
}
