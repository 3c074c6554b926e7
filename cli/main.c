/* labloop: the command line for people and scripts, over the daemon's HTTP API. */
#include <stdio.h>
#include <string.h>

#ifndef LAB_VERSION
#define LAB_VERSION "0"
#endif

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "--version") == 0) {
        printf("labloop %s\n", LAB_VERSION);
        return 0;
    }
    fprintf(stderr, "usage: labloop --version\n");
    return 2;
}
