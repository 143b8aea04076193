/* The filo subcommands: each takes the arguments after its name and returns the exit status
 * (0 done, 1 failed with a message on stderr, 2 bad usage). */
#ifndef FILO_TOOLS_COMMANDS_H
#define FILO_TOOLS_COMMANDS_H

int filo_cmd_tokenize(int argc, char **argv);
int filo_cmd_finetune(int argc, char **argv);
int filo_cmd_predict(int argc, char **argv);

#endif
