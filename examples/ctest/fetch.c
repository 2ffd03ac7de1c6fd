/* Pretends to fetch a page from a remote server: the resource being gated. */
#include <stdio.h>

int main(int argc, char **argv)
{
	printf("fetching %s\n", argc > 1 ? argv[1] : "/");
	return 0;
}
